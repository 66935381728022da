//! `type = "amplitude"`: an Amplitude project's settings.

use std::sync::Arc;

use serde::Deserialize;

use super::{Amplitude, AmplitudeConfig};
use crate::Destination;
use crate::settings::{self, BuildError, Context, Defaults, DestinationSettings};

/// `type = "amplitude"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The API's base URL (default `https://api2.amplitude.com`;
    /// `https://api.eu.amplitude.com` for EU residency, or a proxy).
    #[serde(default)]
    pub api_url: Option<String>,
    /// The project's API key.
    #[serde(default)]
    pub api_key: Option<String>,
}

impl Settings {
    fn api_url(&self) -> String {
        self.api_url.clone().unwrap_or_else(|| "https://api2.amplitude.com".to_owned())
    }
}

impl DestinationSettings for Settings {
    fn kind(&self) -> &'static str {
        "amplitude"
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        settings::require(self.kind(), "api_key", self.api_key.as_deref(), &mut problems);
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
        let amplitude = Amplitude::new(AmplitudeConfig {
            api_url: self.api_url(),
            api_key: self.api_key.clone().unwrap_or_default(),
            timeout: context.timeout.unwrap_or(settings::ANALYTICS_REQUEST_TIMEOUT),
        })?;
        Ok(Arc::new(amplitude))
    }
}
