//! Mixpanel, through its ingestion API: events to `/import` (batches of up to 2,000,
//! `strict=1`, the project token as Basic username, or a service account), profile
//! updates to `/engage`, group profiles to `/groups`.
//!
//! | Segment call | Mixpanel |
//! | --- | --- |
//! | track | the event, with `time`, `distinct_id`, `$insert_id`, `$device_id`, `$user_id`; with `revenue` and a user id also a People transaction (`$append` to `$transactions`: `$amount`, `$time`) |
//! | page, screen | `Loaded a Page` / `Loaded a Screen` with the properties and the name |
//! | identify | profile `$set` of the traits (`email` → `$email`, `name` → `$name`, `firstName` → `$first_name`, `lastName` → `$last_name`, `phone` → `$phone`, `avatar` → `$avatar`, `createdAt` → `$created`); with an anonymous id too, an `$identify` event linking both |
//! | alias | `$create_alias` (`distinct_id` = previous id, `alias` = user id) |
//! | group | group profile `$set` under the group key `group_id` |
//!
//! `$insert_id` (Mixpanel's dedupe key, at most 36 letters, digits and dashes) is the
//! message id when it fits, else a hash of it, so a retry never counts twice. `revenue`
//! without `currency` gets `currency: "USD"`. A `400` from `/import` names the events it
//! refused (`failed_records`); those are rejected and the rest are delivered, as Mixpanel
//! keeps them. 429 and 5xx are retried. A People transaction is not deduplicated by
//! Mixpanel: an event retried after its transaction was taken may append it twice.

use std::sync::Arc;

use bytes::Bytes;
use hyper::header::HeaderValue;
use serde_json::{Value, json};

use crate::http::{HttpClient, HttpError, Reply, outcome};
use crate::mapping::{self, Object};
use crate::{BoxFuture, Destination, Event, Outcome};

mod config;

pub use config::{MixpanelConfig, ServiceAccount};
use ferry_event::CallType;

/// Events per `/import` (and `/engage`) request: Mixpanel's limit.
const MAX_PER_REQUEST: usize = 2000;
/// Bytes per request (Mixpanel takes more; this keeps retries cheap).
const MAX_REQUEST_BYTES: usize = 2 << 20;

/// Why the Mixpanel destination cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("mixpanel needs a project token")]
    MissingToken,
    #[error(transparent)]
    Client(#[from] HttpError),
}

/// The Mixpanel destination.
pub struct Mixpanel {
    config: MixpanelConfig,
    client: HttpClient,
}

/// One request-sized piece of work an event turns into.
enum Op {
    Import(Value),
    Engage(Value),
    Group(Value),
}

impl Mixpanel {
    pub fn new(config: MixpanelConfig) -> Result<Mixpanel, Error> {
        if config.project_token.is_empty() {
            return Err(Error::MissingToken);
        }
        let api_url = config.api_url.trim_end_matches('/').to_owned();
        Ok(Mixpanel { config: MixpanelConfig { api_url, ..config }, client: HttpClient::new()? })
    }

    /// What an event becomes.
    fn ops(&self, event: &Event) -> Vec<Op> {
        let token = &self.config.project_token;
        let mut ops = Vec::new();
        let distinct_id = event.user_id.clone().or_else(|| event.anonymous_id.clone()).unwrap_or_default();
        let context = mapping::context(event);
        let import = |name: &str, mut properties: Object, salt: &str| {
            properties.insert("time".into(), json!(mapping::millis(event)));
            properties.insert("distinct_id".into(), json!(distinct_id));
            properties.insert("$insert_id".into(), json!(insert_id(&event.message_id, salt)));
            properties.insert("token".into(), json!(token));
            if let Some(anonymous) = &event.anonymous_id {
                properties.insert("$device_id".into(), json!(anonymous));
            }
            if let Some(user) = &event.user_id {
                properties.insert("$user_id".into(), json!(user));
            }
            if let Some(ip) = mapping::text(context.get("ip")) {
                properties.entry("ip").or_insert(json!(ip));
            }
            if let Some(url) = mapping::text(mapping::at(&context, &["page", "url"])) {
                properties.entry("$current_url").or_insert(json!(url));
            }
            if let Some(referrer) = mapping::text(mapping::at(&context, &["page", "referrer"])) {
                properties.entry("$referrer").or_insert(json!(referrer));
            }
            properties.entry("mp_lib").or_insert(json!("ferry"));
            Op::Import(json!({ "event": name, "properties": properties }))
        };
        match event.kind {
            CallType::Track => {
                let mut properties = mapping::properties(event);
                let revenue = mapping::number(properties.get("revenue"));
                if revenue.is_some() && !properties.contains_key("currency") {
                    properties.insert("currency".into(), json!(ferry_event::DEFAULT_CURRENCY));
                }
                ops.push(import(event.event.as_deref().unwrap_or_default(), properties, ""));
                if let (Some(amount), Some(user)) = (revenue, &event.user_id) {
                    ops.push(Op::Engage(json!({
                        "$token": token,
                        "$distinct_id": user,
                        "$append": { "$transactions": { "$amount": amount, "$time": iso_seconds(event.timestamp) } },
                    })));
                }
            }
            CallType::Page | CallType::Screen => {
                let mut properties = mapping::properties(event);
                if let Some(name) = &event.name {
                    properties.entry("name").or_insert(json!(name));
                }
                if let Some(category) = &event.category {
                    properties.entry("category").or_insert(json!(category));
                }
                let name = if event.kind == CallType::Page { "Loaded a Page" } else { "Loaded a Screen" };
                ops.push(import(name, properties, ""));
            }
            CallType::Identify => {
                if let Some(user) = &event.user_id {
                    ops.push(Op::Engage(json!({
                        "$token": token,
                        "$distinct_id": user,
                        "$set": profile(mapping::traits(event)),
                    })));
                    if let Some(anonymous) = &event.anonymous_id {
                        let mut properties = Object::new();
                        properties.insert("$identified_id".into(), json!(user));
                        properties.insert("$anon_id".into(), json!(anonymous));
                        ops.push(import("$identify", properties, "identify"));
                    }
                }
            }
            CallType::Alias => {
                if let (Some(previous), Some(user)) = (&event.previous_id, &event.user_id) {
                    let mut properties = Object::new();
                    properties.insert("alias".into(), json!(user));
                    let mut op = import("$create_alias", properties, "alias");
                    if let Op::Import(value) = &mut op {
                        value["properties"]["distinct_id"] = json!(previous);
                    }
                    ops.push(op);
                }
            }
            CallType::Group => {
                if let Some(group) = &event.group_id {
                    ops.push(Op::Group(json!({
                        "$token": token,
                        "$group_key": "group_id",
                        "$group_id": group,
                        "$set": mapping::traits(event),
                    })));
                }
            }
        }
        ops
    }

    async fn post(&self, path: &str, items: &[&Value]) -> Result<Reply, HttpError> {
        let mut headers = vec![(hyper::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
        let mut url = format!("{}{path}", self.config.api_url);
        if path.starts_with("/import") {
            let auth = match &self.config.service_account {
                Some(account) => {
                    url.push_str(&format!("&project_id={}", account.project_id));
                    mapping::basic_auth(&account.user, &account.secret)
                }
                None => mapping::basic_auth(&self.config.project_token, ""),
            };
            if let Ok(value) = HeaderValue::try_from(auth) {
                headers.push((hyper::header::AUTHORIZATION, value));
            }
        }
        let body = Bytes::from(serde_json::to_vec(items).unwrap_or_default());
        self.client.send(hyper::Method::POST, &url, &headers, body, self.config.timeout).await
    }

    /// Send `items` to `path` in request-sized pieces; one outcome per item.
    async fn send_all(&self, path: &str, items: &[&Value]) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(items.len());
        for piece in pieces(items) {
            let reply = self.post(path, piece).await;
            outcomes.extend(if path.starts_with("/import") {
                import_outcomes(&reply, piece.len())
            } else {
                engage_outcomes(&reply, piece.len())
            });
        }
        outcomes
    }
}

/// Runs of items within the count and byte limits.
fn pieces<'i, 'v>(items: &'i [&'v Value]) -> Vec<&'i [&'v Value]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let size = item.to_string().len() + 1;
        if i > start && (i - start >= MAX_PER_REQUEST || bytes + size > MAX_REQUEST_BYTES) {
            out.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// `/import`: 200 all in; 400 with `failed_records` names the refused ones (the rest are
/// in); anything else as any HTTP answer.
fn import_outcomes(reply: &Result<Reply, HttpError>, n: usize) -> Vec<Outcome> {
    if let Ok(r) = reply
        && r.status == 400
        && let Ok(body) = serde_json::from_slice::<Value>(&r.body)
        && let Some(failed) = body.get("failed_records").and_then(Value::as_array)
    {
        let mut outcomes = vec![Outcome::Delivered; n];
        for record in failed {
            let Some(index) = record.get("index").and_then(Value::as_u64).map(|i| i as usize).filter(|&i| i < n) else {
                continue;
            };
            let field = record.get("field").and_then(Value::as_str).unwrap_or("?");
            let message = record.get("message").and_then(Value::as_str).unwrap_or("refused");
            outcomes[index] = Outcome::reject(format!("mixpanel refused {field}: {message}"));
        }
        return outcomes;
    }
    vec![outcome(reply); n]
}

/// `/engage` and `/groups` (`?verbose=1`): `{"status": 1}` is success; `{"status": 0,
/// "error": ...}` refuses the whole request.
fn engage_outcomes(reply: &Result<Reply, HttpError>, n: usize) -> Vec<Outcome> {
    if let Ok(r) = reply
        && (200..300).contains(&r.status)
        && let Ok(body) = serde_json::from_slice::<Value>(&r.body)
        && body.get("status").and_then(Value::as_i64) == Some(0)
    {
        let error = body.get("error").and_then(Value::as_str).unwrap_or("refused");
        return vec![Outcome::reject(format!("mixpanel refused the profile update: {error}")); n];
    }
    vec![outcome(reply); n]
}

/// Segment's traits under Mixpanel's reserved profile names.
fn profile(traits: Object) -> Object {
    traits
        .into_iter()
        .map(|(key, value)| {
            let key = match key.as_str() {
                "email" => "$email".to_owned(),
                "name" => "$name".to_owned(),
                "firstName" | "first_name" => "$first_name".to_owned(),
                "lastName" | "last_name" => "$last_name".to_owned(),
                "phone" => "$phone".to_owned(),
                "avatar" => "$avatar".to_owned(),
                "createdAt" | "created_at" => "$created".to_owned(),
                _ => key,
            };
            (key, value)
        })
        .collect()
}

/// Mixpanel's `$insert_id`: at most 36 letters, digits and `-`. The message id when it
/// is one; otherwise 32 hex digits of a hash of it (and `salt`, for the second event one
/// message makes).
fn insert_id(message_id: &str, salt: &str) -> String {
    let fits = message_id.len() <= 36 && message_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if fits && salt.is_empty() {
        return message_id.to_owned();
    }
    let hash = xxhash_rust::xxh3::xxh3_128(format!("{salt}\0{message_id}").as_bytes());
    format!("{hash:032x}")
}

/// ISO-8601 in seconds, as Mixpanel's `$time` of a transaction.
fn iso_seconds(ts: jiff::Timestamp) -> String {
    let t = jiff::tz::Offset::UTC.to_datetime(ts);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", t.year(), t.month(), t.day(), t.hour(), t.minute(), t.second())
}

/// The outcome of an event from those of its operations: every one delivered, or the
/// first rejection, or a retry (the longest `Retry-After`).
pub(crate) fn merge(outcomes: impl IntoIterator<Item = Outcome>) -> Outcome {
    let mut merged = Outcome::Delivered;
    for outcome in outcomes {
        merged = match (merged, outcome) {
            (reject @ Outcome::Reject { .. }, _) | (_, reject @ Outcome::Reject { .. }) => reject,
            (Outcome::Retry { after: a, error }, Outcome::Retry { after: b, .. }) => {
                Outcome::Retry { after: a.max(b), error }
            }
            (retry @ Outcome::Retry { .. }, _) | (_, retry @ Outcome::Retry { .. }) => retry,
            (Outcome::Delivered, other) | (other, Outcome::Delivered) => other,
            (skipped, Outcome::Skipped { .. }) => skipped,
        };
    }
    merged
}

impl Destination for Mixpanel {
    fn send<'a>(&'a self, events: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            // Every operation, with the event it came from.
            let mut imports: Vec<(usize, Value)> = Vec::new();
            let mut engages: Vec<(usize, Value)> = Vec::new();
            let mut groups: Vec<(usize, Value)> = Vec::new();
            let mut any = vec![false; events.len()];
            for (i, event) in events.iter().enumerate() {
                for op in self.ops(event) {
                    any[i] = true;
                    match op {
                        Op::Import(v) => imports.push((i, v)),
                        Op::Engage(v) => engages.push((i, v)),
                        Op::Group(v) => groups.push((i, v)),
                    }
                }
            }
            let mut per_event: Vec<Vec<Outcome>> = vec![Vec::new(); events.len()];
            for (path, ops) in
                [("/import?strict=1", &imports), ("/engage?verbose=1", &engages), ("/groups?verbose=1", &groups)]
            {
                if ops.is_empty() {
                    continue;
                }
                let values: Vec<&Value> = ops.iter().map(|(_, v)| v).collect();
                let outcomes = self.send_all(path, &values).await;
                for ((i, _), outcome) in ops.iter().zip(outcomes) {
                    per_event[*i].push(outcome);
                }
            }
            per_event
                .into_iter()
                .zip(any)
                .map(|(outcomes, any)| {
                    if any {
                        merge(outcomes)
                    } else {
                        Outcome::skipped("nothing to send to mixpanel (no user id or group id)")
                    }
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn insert_ids_fit_mixpanels_rule() {
        assert_eq!(insert_id("29fc2962-6d9c-455d-95ad-95b84f09b9e4", ""), "29fc2962-6d9c-455d-95ad-95b84f09b9e4");
        let long = insert_id("ajs-next-1795862245890-a6bc1312-4482-4e14-9560-5ab4dd7be383", "");
        assert_eq!(long.len(), 32);
        assert_eq!(long, insert_id("ajs-next-1795862245890-a6bc1312-4482-4e14-9560-5ab4dd7be383", ""));
        assert_ne!(insert_id("m1", "identify"), insert_id("m1", ""));
    }

    #[test]
    fn outcomes_merge_rejections_first_then_retries() {
        let retry = |s| Outcome::Retry { after: Some(Duration::from_secs(s)), error: "429".into() };
        assert_eq!(merge([Outcome::Delivered, Outcome::Delivered]), Outcome::Delivered);
        assert_eq!(
            merge([Outcome::Delivered, retry(3), retry(9)]),
            Outcome::Retry { after: Some(Duration::from_secs(9)), error: "429".into() }
        );
        assert_eq!(merge([retry(3), Outcome::reject("bad")]), Outcome::reject("bad"));
    }

    #[test]
    fn traits_take_mixpanels_reserved_names() {
        let traits: Object = serde_json::from_str(
            r#"{"email":"a@b.c","firstName":"Ada","plan":"pro","createdAt":"2024-01-15T10:00:00Z"}"#,
        )
        .unwrap();
        let p = profile(traits);
        assert_eq!(p["$email"], "a@b.c");
        assert_eq!(p["$first_name"], "Ada");
        assert_eq!(p["$created"], "2024-01-15T10:00:00Z");
        assert_eq!(p["plan"], "pro");
    }

    #[test]
    fn failed_records_reject_only_those() {
        let body = br#"{"code":400,"error":"some data points in the request failed validation","num_records_imported":2,"failed_records":[{"index":1,"insert_id":"x","field":"properties.time","message":"'properties.time' is invalid"}]}"#;
        let reply = Ok(Reply { status: 400, retry_after: None, body: Bytes::from_static(body) });
        let outcomes = import_outcomes(&reply, 3);
        assert_eq!(outcomes[0], Outcome::Delivered);
        assert!(matches!(&outcomes[1], Outcome::Reject { reason } if reason.contains("properties.time")));
        assert_eq!(outcomes[2], Outcome::Delivered);
    }
}
