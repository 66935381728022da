//! `type = "postgres"`: a PostgreSQL warehouse's settings.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{PostgresConfig, PostgresWarehouse};
use crate::Destination;
use crate::settings::{self, BuildError, Context, Defaults, DestinationSettings};

/// `type = "postgres"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The connection URL, e.g. `postgres://user:password@host:5432/analytics` (no TLS yet).
    #[serde(default)]
    pub url: Option<String>,
}

impl DestinationSettings for Settings {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        settings::require(self.kind(), "url", self.url.as_deref(), &mut problems);
        problems
    }

    fn defaults(&self) -> Defaults {
        crate::warehouse::DEFAULTS
    }

    fn target(&self, _: &Context<'_>) -> String {
        settings::redact(self.url.as_deref().unwrap_or_default())
    }

    fn build(&self, _: &Context<'_>) -> Result<Arc<dyn Destination>, BuildError> {
        let url = self.url.clone().unwrap_or_default();
        Ok(Arc::new(PostgresWarehouse::new(PostgresConfig { url, connect_timeout: Duration::from_secs(10) })))
    }
}
