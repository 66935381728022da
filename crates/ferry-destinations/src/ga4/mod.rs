//! Google Analytics 4, through the Measurement Protocol
//! (`POST /mp/collect?measurement_id=…&api_secret=…`, up to 25 events a request, one
//! client per request).
//!
//! The collection endpoint answers 2xx even to events it will drop, so ferry checks what
//! GA4 checks before sending, and rejects (dead-letters) what would be dropped: event and
//! parameter names (a letter first, then letters, digits and `_`, at most 40; not
//! reserved, no `_`, `firebase_`, `ga_`, `google_` prefix), string values (at most 100
//! characters), `currency` (ISO 4217), and `transaction_id` on purchases and refunds.
//!
//! - `client_id` is the anonymous id (else the user id); `user_id` the user id.
//! - Segment's e-commerce events become GA4's: Order Completed → `purchase` (`value` from
//!   `total`, else `revenue`; `transaction_id` from `order_id`), Order Refunded → `refund`,
//!   Product Viewed → `view_item`, Product Added → `add_to_cart`, Product Removed →
//!   `remove_from_cart`, Checkout Started → `begin_checkout`, Payment Info Entered →
//!   `add_payment_info`, Product List Viewed → `view_item_list`, Product Clicked →
//!   `select_item`, Promotion Viewed / Clicked → `view_promotion` / `select_promotion`,
//!   Cart Viewed → `view_cart`, Products Searched → `search`, Product Added to Wishlist →
//!   `add_to_wishlist`, Signed In → `login`, Signed Up → `sign_up`; `products` become
//!   `items` (`item_id` from `product_id` or `sku`, `item_name`, `item_category`,
//!   `item_brand`, `item_variant`, `price`, `quantity`, `coupon`, `index` from
//!   `position`). `currency` is as sent, or USD when `revenue` comes without one.
//! - Other tracks go under the snake_case of their name, with their scalar properties as
//!   parameters (GA4 takes at most 25: the first 25 are sent).
//! - page → `page_view` (`page_location`, `page_title`, `page_referrer`); screen →
//!   `screen_view` (`screen_name`). identify, group and alias are skipped: the protocol has
//!   no counterpart.

use std::sync::Arc;

use hyper::header::HeaderValue;
use serde_json::{Value, json};

use crate::http::{HttpClient, HttpError, outcome};
use crate::mapping::{self, Object};
use crate::{BoxFuture, Destination, Event, Outcome};

mod config;

pub use config::Ga4Config;
use ferry_event::CallType;

const MAX_EVENTS_PER_REQUEST: usize = 25;
const MAX_PARAMS: usize = 25;
const MAX_NAME: usize = 40;
const MAX_VALUE_CHARS: usize = 100;

/// Event names GA4 keeps for itself.
const RESERVED_EVENTS: &[&str] = &[
    "ad_activeview",
    "ad_click",
    "ad_exposure",
    "ad_query",
    "ad_reward",
    "adunit_exposure",
    "app_background",
    "app_clear_data",
    "app_exception",
    "app_remove",
    "app_store_refund",
    "app_store_subscription_cancel",
    "app_store_subscription_convert",
    "app_store_subscription_renew",
    "app_update",
    "app_upgrade",
    "dynamic_link_app_open",
    "dynamic_link_app_update",
    "dynamic_link_first_open",
    "error",
    "first_open",
    "first_visit",
    "in_app_purchase",
    "notification_dismiss",
    "notification_foreground",
    "notification_open",
    "notification_receive",
    "os_update",
    "session_start",
    "session_start_with_rollout",
    "user_engagement",
];

/// Segment's e-commerce (and sign-in) events and GA4's names for them.
const EVENT_NAMES: &[(&str, &str)] = &[
    ("Order Completed", "purchase"),
    ("Order Refunded", "refund"),
    ("Product Viewed", "view_item"),
    ("Product Added", "add_to_cart"),
    ("Product Removed", "remove_from_cart"),
    ("Checkout Started", "begin_checkout"),
    ("Payment Info Entered", "add_payment_info"),
    ("Product List Viewed", "view_item_list"),
    ("Product Clicked", "select_item"),
    ("Promotion Viewed", "view_promotion"),
    ("Promotion Clicked", "select_promotion"),
    ("Cart Viewed", "view_cart"),
    ("Products Searched", "search"),
    ("Product Added to Wishlist", "add_to_wishlist"),
    ("Signed In", "login"),
    ("Signed Up", "sign_up"),
];

/// Why the GA4 destination cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("google analytics 4 needs a measurement id and an api secret")]
    MissingCredentials,
    #[error(transparent)]
    Client(#[from] HttpError),
}

/// Why an event is rejected rather than sent: GA4 would answer 2xx and drop it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("ga4 needs a client id: the event has no anonymous id or user id")]
    NoClientId,
    #[error("{name:?} is not a valid ga4 {what} name (a letter, then letters, digits or _, at most 40)")]
    Name { name: String, what: &'static str },
    #[error("{0:?} is reserved by ga4")]
    Reserved(String),
    #[error("currency {0:?} is not an iso 4217 code")]
    Currency(String),
    #[error("ga4 {0} needs transaction_id: the event has no order_id")]
    NoTransactionId(String),
}

/// The Google Analytics 4 destination.
pub struct Ga4 {
    config: Ga4Config,
    client: HttpClient,
}

impl Ga4 {
    pub fn new(config: Ga4Config) -> Result<Ga4, Error> {
        if config.measurement_id.is_empty() || config.api_secret.is_empty() {
            return Err(Error::MissingCredentials);
        }
        let api_url = config.api_url.trim_end_matches('/').to_owned();
        Ok(Ga4 { config: Ga4Config { api_url, ..config }, client: HttpClient::new()? })
    }
}

/// What an event becomes: the client it belongs to and GA4's event.
#[derive(Debug)]
pub(crate) struct Mapped {
    client_id: String,
    user_id: Option<String>,
    micros: i64,
    event: Value,
}

/// A valid GA4 event or parameter name (or why not).
fn check_name(name: &str, what: &'static str) -> Result<(), Refusal> {
    let mut chars = name.chars();
    let shaped = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_NAME;
    if !shaped {
        return Err(Refusal::Name { name: name.to_owned(), what });
    }
    if ["firebase_", "ga_", "google_"].iter().any(|p| name.starts_with(p))
        || (what == "event" && RESERVED_EVENTS.contains(&name))
    {
        return Err(Refusal::Reserved(name.to_owned()));
    }
    Ok(())
}

/// A scalar parameter value GA4 keeps (strings up to 100 characters).
fn param(value: &Value) -> Option<Value> {
    match value {
        Value::String(s) if s.chars().count() <= MAX_VALUE_CHARS => Some(value.clone()),
        Value::String(s) => Some(json!(s.chars().take(MAX_VALUE_CHARS).collect::<String>())),
        Value::Number(_) => Some(value.clone()),
        Value::Bool(b) => Some(json!(i64::from(*b))),
        _ => None,
    }
}

/// One Segment product as a GA4 item.
fn item(product: &Object) -> Object {
    let mut out = Object::new();
    let pairs = [
        ("item_id", mapping::text(product.get("product_id")).or_else(|| mapping::text(product.get("sku")))),
        ("item_name", mapping::text(product.get("name"))),
        ("item_category", mapping::text(product.get("category"))),
        ("item_brand", mapping::text(product.get("brand"))),
        ("item_variant", mapping::text(product.get("variant"))),
        ("coupon", mapping::text(product.get("coupon"))),
        ("affiliation", mapping::text(product.get("affiliation"))),
    ];
    for (key, value) in pairs {
        if let Some(value) = value {
            out.insert(key.into(), json!(value));
        }
    }
    for (key, from) in [("price", "price"), ("quantity", "quantity"), ("index", "position")] {
        if let Some(n) = product.get(from).filter(|v| v.is_number()) {
            out.insert(key.into(), n.clone());
        }
    }
    out
}

/// The GA4 event of a Segment event; `Err` rejects it, `Ok(None)` skips it.
pub(crate) fn map(event: &Event) -> Result<Option<Mapped>, Refusal> {
    let client_id = match (&event.anonymous_id, &event.user_id) {
        (Some(a), _) => a.clone(),
        (None, Some(u)) => u.clone(),
        (None, None) => return Err(Refusal::NoClientId),
    };
    let properties = mapping::properties(event);
    let mut params = Object::new();
    let name = match event.kind {
        CallType::Track => {
            let segment_name = event.event.as_deref().unwrap_or_default();
            match EVENT_NAMES.iter().find(|(s, _)| *s == segment_name) {
                Some((_, ga4)) => {
                    ecommerce(ga4, &properties, &mut params)?;
                    (*ga4).to_owned()
                }
                None => {
                    let name = crate::warehouse::snake_case_of(segment_name);
                    check_name(&name, "event")?;
                    for (key, value) in &properties {
                        let key = crate::warehouse::snake_case_of(key);
                        if params.len() >= MAX_PARAMS || check_name(&key, "parameter").is_err() {
                            continue;
                        }
                        if let Some(value) = param(value) {
                            params.insert(key, value);
                        }
                    }
                    name
                }
            }
        }
        CallType::Page => {
            let context = mapping::context(event);
            let location =
                mapping::text(properties.get("url")).or_else(|| mapping::text(mapping::at(&context, &["page", "url"])));
            let title = mapping::text(properties.get("title")).or_else(|| event.name.clone());
            let referrer = mapping::text(properties.get("referrer"));
            for (key, value) in [("page_location", location), ("page_title", title), ("page_referrer", referrer)] {
                if let Some(value) = value.and_then(|v| param(&json!(v))) {
                    params.insert(key.into(), value);
                }
            }
            "page_view".to_owned()
        }
        CallType::Screen => {
            if let Some(name) = &event.name {
                params.insert("screen_name".into(), json!(name.chars().take(MAX_VALUE_CHARS).collect::<String>()));
            }
            "screen_view".to_owned()
        }
        CallType::Identify | CallType::Group | CallType::Alias => return Ok(None),
    };
    params.entry("engagement_time_msec").or_insert(json!(1));
    let micros = event.timestamp.as_microsecond();
    Ok(Some(Mapped {
        client_id,
        user_id: event.user_id.clone(),
        micros,
        event: json!({ "name": name, "params": params, "timestamp_micros": micros }),
    }))
}

/// The parameters of a GA4 e-commerce event.
fn ecommerce(name: &str, properties: &Object, params: &mut Object) -> Result<(), Refusal> {
    if let Some(currency) = mapping::currency(properties) {
        if !ferry_event::is_currency(&currency) {
            return Err(Refusal::Currency(currency));
        }
        params.insert("currency".into(), json!(currency));
    }
    let value = match name {
        "purchase" | "refund" => {
            mapping::number(properties.get("total")).or_else(|| mapping::number(properties.get("revenue")))
        }
        _ => mapping::number(properties.get("value")).or_else(|| mapping::number(properties.get("price"))),
    };
    if let Some(value) = value {
        params.insert("value".into(), json!(value));
        if !params.contains_key("currency") {
            // GA4 ignores a value without its currency; Segment's default applies.
            params.insert("currency".into(), json!(ferry_event::DEFAULT_CURRENCY));
        }
    }
    if matches!(name, "purchase" | "refund") {
        let Some(order) = mapping::text(properties.get("order_id")) else {
            return Err(Refusal::NoTransactionId(name.to_owned()));
        };
        params.insert("transaction_id".into(), json!(order));
    }
    for (key, from) in
        [("coupon", "coupon"), ("affiliation", "affiliation"), ("search_term", "query"), ("method", "method")]
    {
        if let Some(value) = mapping::text(properties.get(from)) {
            params.insert(key.into(), json!(value.chars().take(MAX_VALUE_CHARS).collect::<String>()));
        }
    }
    for key in ["shipping", "tax"] {
        if let Some(n) = properties.get(key).filter(|v| v.is_number()) {
            params.insert(key.into(), n.clone());
        }
    }
    if matches!(name, "view_item_list" | "select_item") {
        if let Some(list) = mapping::text(properties.get("list_id")) {
            params.insert("item_list_id".into(), json!(list));
        }
        if let Some(category) = mapping::text(properties.get("category")) {
            params.insert("item_list_name".into(), json!(category));
        }
    }
    if matches!(name, "view_promotion" | "select_promotion") {
        for (key, from) in [
            ("promotion_id", "promotion_id"),
            ("promotion_name", "name"),
            ("creative_name", "creative"),
            ("creative_slot", "position"),
        ] {
            if let Some(value) = mapping::text(properties.get(from)) {
                params.insert(key.into(), json!(value));
            }
        }
    }
    let items: Vec<Value> = match properties.get("products").and_then(Value::as_array) {
        Some(products) => products.iter().filter_map(Value::as_object).map(|p| Value::Object(item(p))).collect(),
        // Product-level events describe one product in their own properties.
        None if matches!(
            name,
            "view_item" | "add_to_cart" | "remove_from_cart" | "select_item" | "add_to_wishlist"
        ) =>
        {
            vec![Value::Object(item(properties))]
        }
        None => Vec::new(),
    };
    if !items.is_empty() {
        params.insert("items".into(), Value::Array(items));
    }
    Ok(())
}

impl Destination for Ga4 {
    fn send<'a>(&'a self, events: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let mut results = vec![Outcome::Delivered; events.len()];
            let mut mapped: Vec<(usize, Mapped)> = Vec::new();
            for (i, event) in events.iter().enumerate() {
                match map(event) {
                    Ok(Some(m)) => mapped.push((i, m)),
                    Ok(None) => {
                        results[i] = Outcome::skipped(format!("ga4 has no counterpart for {}", event.kind.as_str()))
                    }
                    Err(refusal) => results[i] = Outcome::reject(refusal.to_string()),
                }
            }
            let url = format!(
                "{}/mp/collect?measurement_id={}&api_secret={}",
                self.config.api_url, self.config.measurement_id, self.config.api_secret
            );
            let headers = [(hyper::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
            // One request per run of events of one client (and user), at most 25 each.
            let mut start = 0;
            while start < mapped.len() {
                let key = (&mapped[start].1.client_id, &mapped[start].1.user_id);
                let mut end = start + 1;
                while end < mapped.len()
                    && end - start < MAX_EVENTS_PER_REQUEST
                    && (&mapped[end].1.client_id, &mapped[end].1.user_id) == key
                {
                    end += 1;
                }
                let run = &mapped[start..end];
                let mut body = json!({
                    "client_id": run[0].1.client_id,
                    "timestamp_micros": run[0].1.micros,
                    "events": run.iter().map(|(_, m)| m.event.clone()).collect::<Vec<_>>(),
                });
                if let Some(user) = &run[0].1.user_id {
                    body["user_id"] = json!(user);
                }
                let reply = self
                    .client
                    .send(hyper::Method::POST, &url, &headers, mapping::body(&body), self.config.timeout)
                    .await;
                let outcome = outcome(&reply);
                for (i, _) in run {
                    results[*i] = outcome.clone();
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

    fn stored(kind: &str, name: &str, properties: &str) -> Event {
        let json = format!(
            r#"{{"type":"{kind}","messageId":"m1","anonymousId":"a1","userId":"u1","event":"{name}","name":"Home","properties":{properties},"context":{{"page":{{"url":"https://x.test/"}}}},"timestamp":"2026-11-28T10:00:00.000Z","receivedAt":"2026-11-28T10:00:00.000Z","sourceId":"web"}}"#
        );
        Event::decode(json.as_bytes()).unwrap()
    }

    #[test]
    fn order_completed_is_a_purchase_with_items() {
        let e = stored(
            "track",
            "Order Completed",
            r#"{"order_id":"o-1","total":27.5,"revenue":25,"currency":"EUR","tax":2.5,"coupon":"MAY","products":[{"product_id":"p1","sku":"s1","name":"Monopoly","price":19,"quantity":1,"category":"Games","position":1},{"sku":"s2","name":"Uno","price":3.5,"quantity":2}]}"#,
        );
        let m = map(&e).unwrap().unwrap();
        assert_eq!(m.client_id, "a1");
        assert_eq!(m.event["name"], "purchase");
        let p = &m.event["params"];
        assert_eq!(
            (p["transaction_id"].as_str(), p["value"].as_f64(), p["currency"].as_str()),
            (Some("o-1"), Some(27.5), Some("EUR"))
        );
        assert_eq!(p["tax"], 2.5);
        assert_eq!(
            p["items"][0],
            json!({"item_id": "p1", "item_name": "Monopoly", "item_category": "Games", "price": 19, "quantity": 1, "index": 1})
        );
        assert_eq!(p["items"][1]["item_id"], "s2");
    }

    #[test]
    fn currencies_are_checked_and_default_to_usd() {
        let bad = stored("track", "Order Completed", r#"{"order_id":"o","total":5,"currency":"EURO"}"#);
        assert!(map(&bad).unwrap_err().to_string().contains("iso 4217"));
        let none = stored("track", "Order Completed", r#"{"order_id":"o","revenue":5}"#);
        assert_eq!(map(&none).unwrap().unwrap().event["params"]["currency"], "USD");
        let no_order = stored("track", "Order Completed", r#"{"total":5}"#);
        assert!(map(&no_order).unwrap_err().to_string().contains("transaction_id"));
    }

    #[test]
    fn product_events_pages_and_custom_events() {
        let viewed =
            stored("track", "Product Viewed", r#"{"product_id":"p1","name":"Monopoly","price":19,"currency":"USD"}"#);
        let m = map(&viewed).unwrap().unwrap();
        assert_eq!(m.event["name"], "view_item");
        assert_eq!(m.event["params"]["items"][0]["item_id"], "p1");
        assert_eq!(m.event["params"]["value"], 19.0);
        let page = stored("page", "", r#"{"title":"Home page","referrer":"https://r.test/"}"#);
        let m = map(&page).unwrap().unwrap();
        assert_eq!(m.event["name"], "page_view");
        assert_eq!(m.event["params"]["page_location"], "https://x.test/");
        assert_eq!(m.event["params"]["page_title"], "Home page");
        let custom = stored("track", "Video Played", r#"{"videoId":"v1","long":"x","nested":{"a":1},"ok":true}"#);
        let m = map(&custom).unwrap().unwrap();
        assert_eq!(m.event["name"], "video_played");
        assert_eq!(m.event["params"]["video_id"], "v1");
        assert_eq!(m.event["params"]["ok"], 1);
        assert!(m.event["params"].get("nested").is_none());
        assert!(map(&stored("track", "first_visit", "{}")).unwrap_err().to_string().contains("reserved"));
        assert!(map(&stored("track", "2 Fast", "{}")).unwrap_err().to_string().contains("not a valid"));
        assert!(map(&stored("identify", "", "{}")).unwrap().is_none());
    }
}
