//! Webhooks, compatible with Segment's Webhooks destination: each event's JSON is
//! `POST`ed (or `PUT`/`PATCH`) to one or more URLs with `Content-Type: application/json`,
//! a `User-Agent`, the configured headers and, with a shared secret, `X-Signature`: the
//! hex HMAC-SHA1 of the exact body bytes under the secret. In batch mode a request
//! carries a JSON array of events (at most `max_events` and `max_bytes`).
//!
//! With several URLs every request goes to all of them at once, and an answer of 2xx
//! from any one delivers it (as Segment does). Otherwise 408, 429, 5xx, timeouts and
//! connection failures are retried (honouring `Retry-After`); any other status rejects.
//!
//! The body is the stored event as ferry keeps it (Segment's message with `receivedAt`,
//! `timestamp` corrected, `messageId`, `sourceId`), without ferry's own `_ferry` notes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use hmac::{KeyInit, Mac};
use hyper::header::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::http::{HttpClient, HttpError, outcome};
use crate::{BoxFuture, Destination, Event, Outcome};

mod config;

pub use config::Settings;

/// What Segment sends as `User-Agent`; receivers that check for it keep working.
pub const USER_AGENT: &str = "Segment.io/1.0 (compatible; ferry)";

/// How a webhook is called.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// One to five URLs.
    pub urls: Vec<String>,
    /// Extra headers, sent with every request.
    pub headers: Vec<(String, String)>,
    /// With a secret, every request carries `X-Signature`.
    pub shared_secret: Option<String>,
    pub method: Method,
    /// Batch mode: events per request and bytes per request (`None`: one event each).
    pub batch: Option<(usize, usize)>,
    /// One request longer than this is a failure (retried). Segment's is 5 s.
    pub timeout: Duration,
    /// Requests in flight at once in single-event mode.
    pub concurrency: usize,
}

/// The HTTP method of a webhook (`method = "post"`, `"put"` or `"patch"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    #[default]
    Post,
    Put,
    Patch,
}

impl WebhookConfig {
    /// One URL, `POST`, one event per request, 5 s timeout.
    pub fn new(url: impl Into<String>) -> WebhookConfig {
        WebhookConfig {
            urls: vec![url.into()],
            headers: Vec::new(),
            shared_secret: None,
            method: Method::Post,
            batch: None,
            timeout: Duration::from_secs(5),
            concurrency: 32,
        }
    }
}

/// Why a webhook cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("a webhook takes 1 to 5 urls, not {0}")]
    UrlCount(usize),
    #[error("invalid webhook url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("invalid header name {name:?}: {reason}")]
    HeaderName { name: String, reason: String },
    #[error("invalid value for header {name}: {reason}")]
    HeaderValue { name: String, reason: String },
    #[error(transparent)]
    Client(#[from] HttpError),
}

/// The webhook destination.
pub struct Webhook {
    config: WebhookConfig,
    client: HttpClient,
    headers: Vec<(HeaderName, HeaderValue)>,
    method: hyper::Method,
}

impl Webhook {
    /// Check the URLs and headers and set up the client.
    pub fn new(config: WebhookConfig) -> Result<Webhook, Error> {
        if config.urls.is_empty() || config.urls.len() > 5 {
            return Err(Error::UrlCount(config.urls.len()));
        }
        for url in &config.urls {
            let invalid = |reason: String| Error::Url { url: url.clone(), reason };
            let uri = url.parse::<hyper::Uri>().map_err(|e| invalid(e.to_string()))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(invalid("needs http:// or https:// and a host".to_owned()));
            }
        }
        let mut headers = vec![
            (hyper::header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (hyper::header::USER_AGENT, HeaderValue::from_static(USER_AGENT)),
        ];
        for (name, value) in &config.headers {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|e| Error::HeaderName { name: name.clone(), reason: e.to_string() })?;
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|e| Error::HeaderValue { name: name.to_string(), reason: e.to_string() })?;
            headers.push((name, value));
        }
        let method = match config.method {
            Method::Post => hyper::Method::POST,
            Method::Put => hyper::Method::PUT,
            Method::Patch => hyper::Method::PATCH,
        };
        let client = HttpClient::new()?;
        Ok(Webhook { config, client, headers, method })
    }

    /// The body of Segment's deletion notification, `{"type":"delete","userId","timestamp"}`:
    /// what this destination sends when a user deletion is requested (deletions are not
    /// taken by ferry's API yet; this is where they will go out).
    pub fn delete_notification(user_id: &str, timestamp: jiff::Timestamp) -> Bytes {
        let body = serde_json::json!({
            "type": "delete",
            "userId": user_id,
            "timestamp": ferry_event::format_time(timestamp),
        });
        Bytes::from(body.to_string())
    }

    /// Send a deletion notification for `user_id` to every URL.
    pub async fn send_delete(&self, user_id: &str, timestamp: jiff::Timestamp) -> Outcome {
        self.post(Webhook::delete_notification(user_id, timestamp)).await
    }

    /// One body to every URL: delivered when any takes it.
    async fn post(&self, body: Bytes) -> Outcome {
        let mut headers = self.headers.clone();
        if let Some(secret) = &self.config.shared_secret
            && let Ok(value) = HeaderValue::try_from(signature(secret, &body))
        {
            headers.push((HeaderName::from_static("x-signature"), value));
        }
        let sends = self
            .config
            .urls
            .iter()
            .map(|url| self.client.send(self.method.clone(), url, &headers, body.clone(), self.config.timeout));
        let outcomes: Vec<Outcome> = futures_util::future::join_all(sends).await.iter().map(outcome).collect();
        combine(outcomes)
    }
}

/// Delivered if any URL took it; else a retry if any may take it later (the longest
/// `Retry-After`); else the first rejection.
fn combine(outcomes: Vec<Outcome>) -> Outcome {
    if outcomes.contains(&Outcome::Delivered) {
        return Outcome::Delivered;
    }
    let mut retry: Option<Outcome> = None;
    let mut reject = None;
    for outcome in outcomes {
        match outcome {
            Outcome::Retry { after, error } => {
                let after = match &retry {
                    Some(Outcome::Retry { after: a, .. }) => after.max(*a),
                    _ => after,
                };
                retry = Some(Outcome::Retry { after, error });
            }
            Outcome::Reject { .. } if reject.is_none() => reject = Some(outcome),
            _ => {}
        }
    }
    retry.or(reject).unwrap_or_else(|| Outcome::retry("no url answered"))
}

/// `X-Signature`: hex HMAC-SHA1 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()) else {
        // HMAC takes keys of any length.
        return String::new();
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// The event as the webhook sends it: the stored JSON without ferry's `_ferry` notes.
pub fn body(event: &Event) -> String {
    crate::segment_json(event).into_owned()
}

impl Destination for Webhook {
    fn send<'a>(&'a self, events: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let Some((max_events, max_bytes)) = self.config.batch else {
                // One request per event, several in flight.
                let posts: Vec<_> = events.iter().map(|event| self.post(Bytes::from(body(event)))).collect();
                return futures_util::stream::iter(posts).buffered(self.config.concurrency.max(1)).collect().await;
            };
            let mut outcomes = Vec::with_capacity(events.len());
            let mut start = 0;
            while start < events.len() {
                // `[` + events joined by `,` + `]`, within both bounds (at least one event).
                let mut array = String::from("[");
                let mut end = start;
                while end < events.len() && end - start < max_events.max(1) {
                    let item = body(&events[end]);
                    if end > start && array.len() + item.len() + 2 > max_bytes {
                        break;
                    }
                    if end > start {
                        array.push(',');
                    }
                    array.push_str(&item);
                    end += 1;
                }
                array.push(']');
                let outcome = self.post(Bytes::from(array)).await;
                outcomes.extend(std::iter::repeat_n(outcome, end - start));
                start = end;
            }
            outcomes
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hex_hmac_sha1_of_the_body() {
        // RFC 2202 test case 2.
        assert_eq!(signature("Jefe", b"what do ya want for nothing?"), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
    }

    #[test]
    fn the_body_drops_only_ferry_notes() {
        let json = r#"{"type":"track","messageId":"m1","event":"E","properties":{"revenue":"x"},"receivedAt":"2026-11-28T10:37:14.899Z","sourceId":"web","_ferry":{"warnings":[]},"_metadata":{"a":1}}"#;
        let event = Event::decode(json.as_bytes()).unwrap();
        assert_eq!(
            body(&event),
            r#"{"type":"track","messageId":"m1","event":"E","properties":{"revenue":"x"},"receivedAt":"2026-11-28T10:37:14.899Z","sourceId":"web","_metadata":{"a":1}}"#
        );
        let plain = json.replace(r#","_ferry":{"warnings":[]}"#, "");
        assert_eq!(body(&Event::decode(plain.as_bytes()).unwrap()), plain);
    }

    #[test]
    fn any_url_delivering_is_enough() {
        let retry = Outcome::Retry { after: Some(Duration::from_secs(3)), error: "http 503".into() };
        let retry_later = Outcome::Retry { after: Some(Duration::from_secs(9)), error: "http 429".into() };
        assert_eq!(combine(vec![retry.clone(), Outcome::Delivered]), Outcome::Delivered);
        assert!(
            matches!(combine(vec![retry.clone(), retry_later]), Outcome::Retry { after: Some(a), .. } if a == Duration::from_secs(9))
        );
        assert_eq!(combine(vec![Outcome::reject("http 400"), retry.clone()]), retry);
        assert_eq!(
            combine(vec![Outcome::reject("http 400"), Outcome::reject("http 404")]),
            Outcome::reject("http 400")
        );
    }

    #[test]
    fn the_deletion_notification_is_segments_shape() {
        let at: jiff::Timestamp = "2026-11-28T10:00:00Z".parse().unwrap();
        assert_eq!(
            &Webhook::delete_notification("u1", at)[..],
            br#"{"timestamp":"2026-11-28T10:00:00.000Z","type":"delete","userId":"u1"}"#
        );
    }

    #[test]
    fn bad_urls_and_headers_are_refused() {
        assert!(Webhook::new(WebhookConfig { urls: vec![], ..WebhookConfig::new("http://x") }).is_err());
        assert!(Webhook::new(WebhookConfig::new("ftp://x/")).err().unwrap().to_string().contains("http"));
        let bad_header =
            WebhookConfig { headers: vec![("bad header".into(), "v".into())], ..WebhookConfig::new("http://x/") };
        assert!(Webhook::new(bad_header).err().unwrap().to_string().contains("invalid header name"));
    }
}
