//! `type = "sqlite"`: the embedded warehouse's settings.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::{SqliteConfig, SqliteWarehouse};
use crate::Destination;
use crate::settings::{BuildError, Context, Defaults, DestinationSettings};

/// `type = "sqlite"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The database file (default `<data_dir>/warehouse.db`).
    pub path: Option<PathBuf>,
}

impl Settings {
    fn path(&self, context: &Context<'_>) -> PathBuf {
        self.path.clone().unwrap_or_else(|| context.data_dir.join("warehouse.db"))
    }
}

impl DestinationSettings for Settings {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn defaults(&self) -> Defaults {
        crate::warehouse::DEFAULTS
    }

    fn target(&self, context: &Context<'_>) -> String {
        self.path(context).display().to_string()
    }

    fn build(&self, context: &Context<'_>) -> Result<Arc<dyn Destination>, BuildError> {
        Ok(Arc::new(SqliteWarehouse::open(&SqliteConfig { path: self.path(context) })?))
    }
}
