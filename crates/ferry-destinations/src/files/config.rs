//! `type = "files"`: a data lake's settings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{Files, FilesConfig};
use crate::Destination;
use crate::settings::{BuildError, Context, Defaults, DestinationSettings, StartAt, TimeoutMs};

/// `type = "files"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The root directory (default `<data_dir>/files`).
    pub path: Option<PathBuf>,
    /// gzip level, 1 (fastest) to 9 (smallest); default 6.
    pub level: Option<u32>,
}

impl Settings {
    fn root(&self, context: &Context<'_>) -> PathBuf {
        self.path.clone().unwrap_or_else(|| context.data_dir.join("files"))
    }
}

impl DestinationSettings for Settings {
    fn kind(&self) -> &'static str {
        "files"
    }

    fn problems(&self) -> Vec<String> {
        match self.level {
            Some(level) if !(1..=9).contains(&level) => vec!["`level` must be between 1 and 9".to_owned()],
            _ => Vec::new(),
        }
    }

    /// A file per partition a minute (or 64 MiB): the batch is the roll size and age.
    fn defaults(&self) -> Defaults {
        Defaults {
            batch_events: 100_000,
            batch_bytes: 64 << 20,
            linger: Duration::from_secs(60),
            start: StartAt::Beginning,
            send_timeout: Duration::from_secs(120),
            timeout_ms: TimeoutMs::Send,
        }
    }

    fn target(&self, context: &Context<'_>) -> String {
        self.root(context).display().to_string()
    }

    fn build(&self, context: &Context<'_>) -> Result<Arc<dyn Destination>, BuildError> {
        Ok(Arc::new(Files::open(FilesConfig { root: self.root(context), level: self.level.unwrap_or(6) })?))
    }
}
