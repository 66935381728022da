//! `type = "ga4"`: a Google Analytics 4 data stream's settings.

use std::sync::Arc;

use serde::Deserialize;

use super::{Ga4, Ga4Config};
use crate::Destination;
use crate::settings::{self, BuildError, Context, Defaults, DestinationSettings};

/// `type = "ga4"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The API's base URL (default `https://www.google-analytics.com`;
    /// `https://region1.google-analytics.com` for the EU, or a proxy).
    #[serde(default)]
    pub api_url: Option<String>,
    /// The data stream's measurement id (`G-...`).
    #[serde(default)]
    pub measurement_id: Option<String>,
    /// A Measurement Protocol API secret of the stream.
    #[serde(default)]
    pub api_secret: Option<String>,
}

impl Settings {
    fn api_url(&self) -> String {
        self.api_url.clone().unwrap_or_else(|| "https://www.google-analytics.com".to_owned())
    }
}

impl DestinationSettings for Settings {
    fn kind(&self) -> &'static str {
        "ga4"
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        settings::require(self.kind(), "measurement_id", self.measurement_id.as_deref(), &mut problems);
        settings::require(self.kind(), "api_secret", self.api_secret.as_deref(), &mut problems);
        settings::check_api_url(self.api_url.as_deref(), &mut problems);
        problems
    }

    fn defaults(&self) -> Defaults {
        settings::ANALYTICS_DEFAULTS
    }

    fn target(&self, _: &Context<'_>) -> String {
        self.api_url()
    }

    fn build(&self, context: &Context<'_>) -> Result<Arc<dyn Destination>, BuildError> {
        let ga4 = Ga4::new(Ga4Config {
            api_url: self.api_url(),
            measurement_id: self.measurement_id.clone().unwrap_or_default(),
            api_secret: self.api_secret.clone().unwrap_or_default(),
            timeout: context.timeout.unwrap_or(settings::ANALYTICS_REQUEST_TIMEOUT),
        })?;
        Ok(Arc::new(ga4))
    }
}
