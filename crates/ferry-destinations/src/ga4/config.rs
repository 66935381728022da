//! `type = "ga4"`: how to reach a Google Analytics 4 data stream.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::Ga4;
use crate::Destination;
use crate::settings::{self, BuildError, Context, Defaults, DestinationSettings};

/// How to reach a GA4 property's data stream (`type = "ga4"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ga4Config {
    /// The API's base URL (default `https://www.google-analytics.com`;
    /// `https://region1.google-analytics.com` for the EU, or a proxy).
    #[serde(default = "api_url")]
    pub api_url: String,
    /// The data stream's measurement id (`G-...`).
    #[serde(default)]
    pub measurement_id: String,
    /// A Measurement Protocol API secret of the stream.
    #[serde(default)]
    pub api_secret: String,
    /// Each request's limit: `timeout_ms`, else 10 s.
    #[serde(skip, default = "settings::analytics_timeout")]
    pub timeout: Duration,
}

fn api_url() -> String {
    "https://www.google-analytics.com".to_owned()
}

impl DestinationSettings for Ga4Config {
    fn kind(&self) -> &'static str {
        "ga4"
    }

    fn problems(&self) -> Vec<String> {
        let required = [("measurement_id", self.measurement_id.as_str()), ("api_secret", &self.api_secret)];
        settings::analytics_problems(self.kind(), &required, &self.api_url)
    }

    fn defaults(&self) -> Defaults {
        settings::ANALYTICS_DEFAULTS
    }

    fn target(&self, _: &Context<'_>) -> String {
        self.api_url.clone()
    }

    fn build(&self, context: &Context<'_>) -> Result<Arc<dyn Destination>, BuildError> {
        let timeout = context.timeout.unwrap_or(self.timeout);
        Ok(Arc::new(Ga4::new(Ga4Config { timeout, ..self.clone() })?))
    }
}
