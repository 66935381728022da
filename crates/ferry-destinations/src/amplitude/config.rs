//! `type = "amplitude"`: how to reach an Amplitude project.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::Amplitude;
use crate::Destination;
use crate::settings::{self, BuildError, Context, Defaults, DestinationSettings};

/// How to reach an Amplitude project (`type = "amplitude"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmplitudeConfig {
    /// The API's base URL (default `https://api2.amplitude.com`;
    /// `https://api.eu.amplitude.com` for EU residency, or a proxy).
    #[serde(default = "api_url")]
    pub api_url: String,
    /// The project's API key.
    #[serde(default)]
    pub api_key: String,
    /// Each request's limit: `timeout_ms`, else 10 s.
    #[serde(skip, default = "settings::analytics_timeout")]
    pub timeout: Duration,
}

fn api_url() -> String {
    "https://api2.amplitude.com".to_owned()
}

impl DestinationSettings for AmplitudeConfig {
    fn kind(&self) -> &'static str {
        "amplitude"
    }

    fn problems(&self) -> Vec<String> {
        settings::analytics_problems(self.kind(), &[("api_key", &self.api_key)], &self.api_url)
    }

    fn defaults(&self) -> Defaults {
        settings::ANALYTICS_DEFAULTS
    }

    fn target(&self, _: &Context<'_>) -> String {
        self.api_url.clone()
    }

    fn build(&self, context: &Context<'_>) -> Result<Arc<dyn Destination>, BuildError> {
        let timeout = context.timeout.unwrap_or(self.timeout);
        Ok(Arc::new(Amplitude::new(AmplitudeConfig { timeout, ..self.clone() })?))
    }
}
