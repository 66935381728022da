//! `type = "postgres"`: how to reach a PostgreSQL warehouse.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::PostgresWarehouse;
use crate::Destination;
use crate::settings::{self, BuildError, Context, Defaults, DestinationSettings};

/// How to reach the database (`type = "postgres"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// The connection URL, e.g. `postgres://user:password@host:5432/analytics`, or a libpq
    /// key=value string. No TLS yet: use it on a trusted network or through a local proxy.
    #[serde(default)]
    pub url: String,
    /// Give up connecting after this long: 10 s.
    #[serde(skip, default = "connect_timeout")]
    pub connect_timeout: Duration,
}

fn connect_timeout() -> Duration {
    Duration::from_secs(10)
}

impl DestinationSettings for PostgresConfig {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn problems(&self) -> Vec<String> {
        settings::require(self.kind(), "url", &self.url).into_iter().collect()
    }

    fn defaults(&self) -> Defaults {
        crate::warehouse::DEFAULTS
    }

    fn target(&self, _: &Context<'_>) -> String {
        settings::redact(&self.url)
    }

    fn build(&self, _: &Context<'_>) -> Result<Arc<dyn Destination>, BuildError> {
        Ok(Arc::new(PostgresWarehouse::new(self.clone())))
    }
}
