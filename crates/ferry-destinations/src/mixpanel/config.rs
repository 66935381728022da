//! `type = "mixpanel"`: a Mixpanel project's settings.

use std::sync::Arc;

use serde::Deserialize;

use super::{Mixpanel, MixpanelConfig};
use crate::Destination;
use crate::settings::{self, BuildError, Context, Defaults, DestinationSettings};

/// `type = "mixpanel"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The API's base URL (default `https://api.mixpanel.com`; `https://api-eu.mixpanel.com`
    /// for EU residency, or a proxy).
    #[serde(default)]
    pub api_url: Option<String>,
    /// The project token.
    #[serde(default)]
    pub project_token: Option<String>,
    /// A service account for `/import` instead of the token.
    #[serde(default)]
    pub service_account: Option<ServiceAccount>,
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

impl Settings {
    fn api_url(&self) -> String {
        self.api_url.clone().unwrap_or_else(|| "https://api.mixpanel.com".to_owned())
    }
}

impl DestinationSettings for Settings {
    fn kind(&self) -> &'static str {
        "mixpanel"
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        settings::require(self.kind(), "project_token", self.project_token.as_deref(), &mut problems);
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
        let mixpanel = Mixpanel::new(MixpanelConfig {
            api_url: self.api_url(),
            project_token: self.project_token.clone().unwrap_or_default(),
            service_account: self
                .service_account
                .as_ref()
                .map(|a| (a.user.clone(), a.secret.clone(), a.project_id.clone())),
            timeout: context.timeout.unwrap_or(settings::ANALYTICS_REQUEST_TIMEOUT),
        })?;
        Ok(Arc::new(mixpanel))
    }
}
