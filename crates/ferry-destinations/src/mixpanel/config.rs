//! `type = "mixpanel"`: how to reach a Mixpanel project.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::Mixpanel;
use crate::Destination;
use crate::settings::{self, BuildError, Context, Defaults, DestinationSettings};

/// How to reach a Mixpanel project (`type = "mixpanel"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixpanelConfig {
    /// The API's base URL (default `https://api.mixpanel.com`; `https://api-eu.mixpanel.com`
    /// for EU residency, or a proxy).
    #[serde(default = "api_url")]
    pub api_url: String,
    /// The project token.
    #[serde(default)]
    pub project_token: String,
    /// A service account for `/import` instead of the token.
    #[serde(default)]
    pub service_account: Option<ServiceAccount>,
    /// Each request's limit: `timeout_ms`, else 10 s.
    #[serde(skip, default = "settings::analytics_timeout")]
    pub timeout: Duration,
}

/// A Mixpanel service account (`[destinations.service_account]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccount {
    /// The service account's user name.
    pub user: String,
    /// Its secret.
    pub secret: String,
    /// The Mixpanel project id.
    pub project_id: String,
}

fn api_url() -> String {
    "https://api.mixpanel.com".to_owned()
}

impl DestinationSettings for MixpanelConfig {
    fn kind(&self) -> &'static str {
        "mixpanel"
    }

    fn problems(&self) -> Vec<String> {
        settings::analytics_problems(self.kind(), &[("project_token", &self.project_token)], &self.api_url)
    }

    fn defaults(&self) -> Defaults {
        settings::ANALYTICS_DEFAULTS
    }

    fn target(&self, _: &Context<'_>) -> String {
        self.api_url.clone()
    }

    fn build(&self, context: &Context<'_>) -> Result<Arc<dyn Destination>, BuildError> {
        let timeout = context.timeout.unwrap_or(self.timeout);
        Ok(Arc::new(Mixpanel::new(MixpanelConfig { timeout, ..self.clone() })?))
    }
}
