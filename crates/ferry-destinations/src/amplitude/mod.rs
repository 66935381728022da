//! Amplitude, through its HTTP V2 API (`POST /2/httpapi`, up to 1,000 events and 1 MB a
//! request, `options.min_id_length = 1` so short ids are taken).
//!
//! | Segment call | Amplitude |
//! | --- | --- |
//! | track | the event: `event_type`, `user_id`, `device_id` (the anonymous id), `time`, `insert_id` (the message id: Amplitude drops repeats for 7 days), `event_properties`, `ip`, `language`; `revenue`, `price`, `quantity`, `productId`, `revenueType` raised to Amplitude's fields, with revenue = price × quantity when both are numbers and `revenueType` `Purchase` by default |
//! | page, screen | `Loaded a Page` / `Loaded a Screen` with the properties and the name |
//! | identify | `$identify` with `user_properties: {"$set": traits}` |
//! | group, alias | skipped: Amplitude's group identify and user mapping APIs are not used |
//!
//! A 400 lists the events it refused (`events_with_invalid_fields`,
//! `events_with_missing_fields`); none of the request was taken, so those are rejected
//! and the rest retried. 429 (throttled) and 5xx are retried; a 400 naming no event (a bad
//! API key) rejects the whole request.

use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderValue;
use serde_json::{Value, json};

use crate::http::{HttpClient, HttpError, Reply, outcome};
use crate::mapping::{self, Object};
use crate::{BoxFuture, Destination, Event, Outcome};

mod config;

pub use config::AmplitudeConfig;
use ferry_event::CallType;

const MAX_PER_REQUEST: usize = 1000;
const MAX_REQUEST_BYTES: usize = 1_000_000;

/// When Amplitude throttles without saying for how long.
const THROTTLED_RETRY: Duration = Duration::from_secs(30);

/// Why the Amplitude destination cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("amplitude needs an api key")]
    MissingKey,
    #[error(transparent)]
    Client(#[from] HttpError),
}

/// The Amplitude destination.
pub struct Amplitude {
    config: AmplitudeConfig,
    client: HttpClient,
}

impl Amplitude {
    pub fn new(config: AmplitudeConfig) -> Result<Amplitude, Error> {
        if config.api_key.is_empty() {
            return Err(Error::MissingKey);
        }
        let api_url = config.api_url.trim_end_matches('/').to_owned();
        Ok(Amplitude { config: AmplitudeConfig { api_url, ..config }, client: HttpClient::new()? })
    }

    async fn post(&self, events: &[Value]) -> Result<Reply, HttpError> {
        let body = json!({ "api_key": self.config.api_key, "events": events, "options": { "min_id_length": 1 } });
        let headers = [(hyper::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
        let url = format!("{}/2/httpapi", self.config.api_url);
        self.client.send(hyper::Method::POST, &url, &headers, mapping::body(&body), self.config.timeout).await
    }
}

/// The Amplitude event of a Segment event, or why there is none.
pub(crate) fn event(event: &Event) -> Result<Value, &'static str> {
    let context = mapping::context(event);
    let mut out = Object::new();
    let (event_type, mut properties) = match event.kind {
        CallType::Track => (event.event.clone().unwrap_or_default(), mapping::properties(event)),
        CallType::Page | CallType::Screen => {
            let mut properties = mapping::properties(event);
            if let Some(name) = &event.name {
                properties.entry("name").or_insert(json!(name));
            }
            let name = if event.kind == CallType::Page { "Loaded a Page" } else { "Loaded a Screen" };
            (name.to_owned(), properties)
        }
        CallType::Identify => {
            out.insert("user_properties".into(), json!({ "$set": mapping::traits(event) }));
            ("$identify".to_owned(), Object::new())
        }
        CallType::Group => return Err("amplitude groups need the group identify api, which ferry does not use"),
        CallType::Alias => return Err("amplitude has no alias; its user mapping api is not used"),
    };
    out.insert("event_type".into(), json!(event_type));
    if let Some(user) = &event.user_id {
        out.insert("user_id".into(), json!(user));
    }
    if let Some(anonymous) = &event.anonymous_id {
        out.insert("device_id".into(), json!(anonymous));
    }
    out.insert("time".into(), json!(mapping::millis(event)));
    out.insert("insert_id".into(), json!(event.message_id));
    out.insert("library".into(), json!("ferry"));
    if let Some(ip) = mapping::text(context.get("ip")) {
        out.insert("ip".into(), json!(ip));
    }
    if let Some(locale) = mapping::text(context.get("locale")) {
        out.insert("language".into(), json!(locale));
    }
    if event.kind == CallType::Track {
        let price = mapping::number(properties.get("price"));
        let quantity = mapping::number(properties.get("quantity"));
        let revenue = match (price, quantity) {
            (Some(price), Some(quantity)) => Some(price * quantity),
            _ => mapping::number(properties.get("revenue")),
        };
        if let Some(revenue) = revenue {
            out.insert("revenue".into(), json!(revenue));
            let kind = mapping::text(properties.get("revenueType")).unwrap_or_else(|| "Purchase".to_owned());
            out.insert("revenueType".into(), json!(kind));
        }
        if let Some(price) = price {
            out.insert("price".into(), json!(price));
        }
        if let Some(quantity) = quantity {
            out.insert("quantity".into(), json!(quantity as i64));
        }
        if let Some(product) = mapping::text(properties.get("productId").or_else(|| properties.get("product_id"))) {
            out.insert("productId".into(), json!(product));
        }
        if properties.contains_key("revenue") && !properties.contains_key("currency") {
            properties.insert("currency".into(), json!(ferry_event::DEFAULT_CURRENCY));
        }
    }
    if event.kind != CallType::Identify {
        out.insert("event_properties".into(), Value::Object(properties));
    }
    Ok(Value::Object(out))
}

/// One outcome per event of a request.
fn outcomes(reply: &Result<Reply, HttpError>, n: usize) -> Vec<Outcome> {
    if let Ok(r) = reply {
        if r.status == 400
            && let Ok(body) = serde_json::from_slice::<Value>(&r.body)
        {
            let mut refused: Vec<(usize, String)> = Vec::new();
            for key in ["events_with_invalid_fields", "events_with_missing_fields"] {
                let Some(fields) = body.get(key).and_then(Value::as_object) else { continue };
                for (field, indices) in fields {
                    for index in indices.as_array().into_iter().flatten().filter_map(Value::as_u64) {
                        let what = if key.contains("missing") { "missing" } else { "invalid" };
                        refused.push((index as usize, format!("amplitude refused the event: {what} {field}")));
                    }
                }
            }
            if !refused.is_empty() {
                // Nothing of the request was taken: the others go again.
                let mut out = vec![Outcome::retry("amplitude refused other events of the request"); n];
                for (index, reason) in refused.into_iter().filter(|(i, _)| *i < n) {
                    out[index] = Outcome::reject(reason);
                }
                return out;
            }
        }
        if r.status == 429 {
            let error = format!(
                "amplitude throttled the request: {}",
                String::from_utf8_lossy(&r.body).chars().take(200).collect::<String>()
            );
            return vec![Outcome::Retry { after: Some(r.retry_after.unwrap_or(THROTTLED_RETRY)), error }; n];
        }
    }
    vec![outcome(reply); n]
}

impl Destination for Amplitude {
    fn send<'a>(&'a self, events: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let mut results: Vec<Outcome> = vec![Outcome::Delivered; events.len()];
            let mut mapped: Vec<(usize, Value)> = Vec::new();
            for (i, e) in events.iter().enumerate() {
                match event(e) {
                    Ok(value) => mapped.push((i, value)),
                    Err(reason) => results[i] = Outcome::skipped(reason),
                }
            }
            let mut start = 0;
            while start < mapped.len() {
                let (mut end, mut bytes) = (start, 200);
                while end < mapped.len() && end - start < MAX_PER_REQUEST {
                    let size = mapped[end].1.to_string().len() + 1;
                    if end > start && bytes + size > MAX_REQUEST_BYTES {
                        break;
                    }
                    bytes += size;
                    end += 1;
                }
                let piece: Vec<Value> = mapped[start..end].iter().map(|(_, v)| v.clone()).collect();
                let reply = self.post(&piece).await;
                for ((i, _), outcome) in mapped[start..end].iter().zip(outcomes(&reply, piece.len())) {
                    results[*i] = outcome;
                }
                start = end;
            }
            results
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(json: &str) -> Event {
        Event::decode(json.as_bytes()).unwrap()
    }

    #[test]
    fn revenue_is_price_times_quantity_when_both_are_there() {
        let e = stored(
            r#"{"type":"track","messageId":"m1","userId":"u1","event":"Order Completed","properties":{"price":2.5,"quantity":4,"revenue":99,"productId":"p9"},"receivedAt":"2026-11-28T10:00:00.000Z","sourceId":"web"}"#,
        );
        let a = event(&e).unwrap();
        assert_eq!(a["revenue"], 10.0);
        assert_eq!(a["price"], 2.5);
        assert_eq!(a["quantity"], 4);
        assert_eq!(a["productId"], "p9");
        assert_eq!(a["revenueType"], "Purchase");
        assert_eq!(a["insert_id"], "m1");
        assert_eq!(a["event_properties"]["currency"], "USD", "revenue without currency means usd");
        let e = stored(
            r#"{"type":"track","messageId":"m2","anonymousId":"a1","event":"Refund","properties":{"revenue":-5,"revenueType":"Refund","currency":"EUR"},"receivedAt":"2026-11-28T10:00:00.000Z","sourceId":"web"}"#,
        );
        let a = event(&e).unwrap();
        assert_eq!(
            (a["revenue"].as_f64(), a["revenueType"].as_str(), a["device_id"].as_str()),
            (Some(-5.0), Some("Refund"), Some("a1"))
        );
    }

    #[test]
    fn identify_sets_user_properties_and_alias_is_skipped() {
        let e = stored(
            r#"{"type":"identify","messageId":"m1","userId":"u1","traits":{"plan":"pro"},"receivedAt":"2026-11-28T10:00:00.000Z","sourceId":"web"}"#,
        );
        let a = event(&e).unwrap();
        assert_eq!(a["event_type"], "$identify");
        assert_eq!(a["user_properties"], json!({"$set": {"plan": "pro"}}));
        let e = stored(
            r#"{"type":"alias","messageId":"m1","userId":"u1","previousId":"a","receivedAt":"2026-11-28T10:00:00.000Z","sourceId":"web"}"#,
        );
        assert!(event(&e).is_err());
    }

    #[test]
    fn a_400_rejects_the_named_events_and_retries_the_rest() {
        let body = br#"{"code":400,"error":"Request missing required field","missing_field":"event_type","events_with_missing_fields":{"event_type":[1]},"events_with_invalid_fields":{"time":[2]}}"#;
        let reply = Ok(Reply { status: 400, retry_after: None, body: bytes::Bytes::from_static(body) });
        let out = outcomes(&reply, 4);
        assert!(matches!(&out[0], Outcome::Retry { .. }));
        assert!(matches!(&out[1], Outcome::Reject { reason } if reason.contains("missing event_type")));
        assert!(matches!(&out[2], Outcome::Reject { reason } if reason.contains("invalid time")));
        assert!(matches!(&out[3], Outcome::Retry { .. }));
        let bad_key = Ok(Reply {
            status: 400,
            retry_after: None,
            body: bytes::Bytes::from_static(br#"{"code":400,"error":"Invalid API key"}"#),
        });
        assert!(outcomes(&bad_key, 2).iter().all(|o| matches!(o, Outcome::Reject { .. })));
        let throttled = Ok(Reply { status: 429, retry_after: None, body: bytes::Bytes::from_static(b"{}") });
        assert!(matches!(&outcomes(&throttled, 1)[0], Outcome::Retry { after: Some(a), .. } if *a == THROTTLED_RETRY));
    }
}
