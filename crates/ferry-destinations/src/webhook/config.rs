//! `type = "webhook"`: a webhook's settings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{Method, Webhook, WebhookConfig};
use crate::Destination;
use crate::settings::{self, BuildError, Context, Defaults, DestinationSettings, StartAt, TimeoutMs};

/// `type = "webhook"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// One to five URLs; an event is delivered when any of them answers 2xx.
    pub urls: Vec<String>,
    /// Extra headers for every request.
    pub headers: BTreeMap<String, String>,
    /// With a secret, requests carry `X-Signature`, the hex HMAC-SHA1 of the body.
    pub shared_secret: Option<String>,
    /// `post` (default), `put` or `patch`.
    pub method: Method,
    /// Send each batch as one JSON array (at most `batch_events` events and `batch_bytes`
    /// bytes per request) instead of one request per event.
    pub batch: bool,
}

impl DestinationSettings for Settings {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn problems(&self) -> Vec<String> {
        if self.urls.is_empty() || self.urls.len() > 5 {
            return vec!["type webhook needs one to five `urls`".to_owned()];
        }
        let wrong = self.urls.iter().filter(|url| !settings::is_http(url));
        wrong.map(|url| format!("webhook url {url:?} must start with http:// or https://")).collect()
    }

    /// Small batches quickly, from now on.
    fn defaults(&self) -> Defaults {
        Defaults {
            batch_events: 100,
            batch_bytes: 1 << 20,
            linger: Duration::from_millis(200),
            start: StartAt::End,
            send_timeout: Duration::from_secs(60),
            timeout_ms: TimeoutMs::Request,
        }
    }

    fn target(&self, _: &Context<'_>) -> String {
        self.urls.iter().map(|url| settings::redact(url)).collect::<Vec<_>>().join(", ")
    }

    fn build(&self, context: &Context<'_>) -> Result<Arc<dyn Destination>, BuildError> {
        // One request without `timeout_ms`: the constructor's default (Segment's 5 s).
        let defaults = WebhookConfig::new(String::new());
        let webhook = Webhook::new(WebhookConfig {
            urls: self.urls.clone(),
            headers: self.headers.clone().into_iter().collect(),
            shared_secret: self.shared_secret.clone(),
            method: self.method,
            batch: self.batch.then_some((context.batch_events, context.batch_bytes)),
            timeout: context.timeout.unwrap_or(defaults.timeout),
            ..defaults
        })?;
        Ok(Arc::new(webhook))
    }
}
